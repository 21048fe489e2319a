from mupctl.cli import main

main()
