from boxmask.cli import main

main()
