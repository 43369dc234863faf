"""Serving a model over HTTP (``oddeye serve``): an exported ONNX file on onnxruntime, without
PyTorch, or a run folder on PyTorch. Needs the extra ``oddeye[serve]`` (FastAPI, uvicorn)."""
