import sys

from cloudlab.cli import main

sys.exit(main())
