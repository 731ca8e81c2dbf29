from oneiric._cli.main import main

main()
