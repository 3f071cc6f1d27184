from aigrid.cli.main import main

main()
