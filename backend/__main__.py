import sys

if sys.argv[1:2] in (["twilio-emulator"], ["mail-sink"]):
    # The local stand-ins `parley run` starts beside every run: without the rest of the
    # command line's imports (backend/ops/stand_ins.py).
    from backend.ops.stand_ins import stand_ins as main
else:
    from backend.ops.cli import main

main()
