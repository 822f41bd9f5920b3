from backend.ops.cli import main

main()
