import sys

from omnipath_lvlm.cli import main

sys.exit(main())
