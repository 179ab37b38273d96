import sys

from deformact.cli import main

sys.exit(main())
