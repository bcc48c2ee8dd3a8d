import sys

from llamarig.commands.cli import main

sys.exit(main())
