from oneiricc._cli.launcher import main

main()
