import sys

from modelwarden.cli import main

sys.exit(main())
