from recengine.cli.main import main

main()
