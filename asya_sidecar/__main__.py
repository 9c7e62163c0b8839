import sys

from asya_sidecar import exit_on_sigterm_while_starting

exit_on_sigterm_while_starting()

from asya_sidecar.main import main  # noqa: E402

sys.exit(main())
