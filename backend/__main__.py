import sys

from backend.ops.stand_ins import stand_ins

if sys.argv[1:2] and sys.argv[1] in stand_ins.commands:
    # The local stand-ins `parley run` starts beside every run: without the rest of the
    # command line's imports (backend/ops/stand_ins.py).
    main = stand_ins
else:
    from backend.ops.cli import main

main()
