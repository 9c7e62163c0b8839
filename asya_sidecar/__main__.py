import sys

from asya_sidecar.main import main

sys.exit(main())
