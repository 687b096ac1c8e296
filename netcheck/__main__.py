from netcheck.cli import main

main()
