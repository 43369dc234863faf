import sys

from oddeye.cli import main

sys.exit(main())
