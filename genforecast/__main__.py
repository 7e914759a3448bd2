import sys

from genforecast.cli import main

sys.exit(main())
