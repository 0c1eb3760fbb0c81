"""`serve`: SageMaker runs `docker run IMAGE serve`; the optional `serve` argument is accepted and ignored.

Exit codes: 0 stopped (SIGTERM), 2 a setting is invalid, 3 the model cannot be served (serve.server.MODEL_UNSERVABLE);
each failure is one JSON log line with its reason.
"""

from __future__ import annotations

import logging
import sys

from serve import logs
from serve.malloc import keep_freed_memory
from serve.settings import Settings, SettingsError, apply_process_defaults


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["serve"]):
        print(f"usage: serve [serve]  (got {' '.join(args)})", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        logs.configure("info")
        logging.getLogger("serve").critical("configuration error", extra={"reason": str(error), "exit_code": 2})
        return 2
    apply_process_defaults()
    keep_freed_memory()
    logs.configure(settings.log_level)
    from serve.server import run

    run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
