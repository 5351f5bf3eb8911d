import sys

from nel.cli import main

sys.exit(main())
