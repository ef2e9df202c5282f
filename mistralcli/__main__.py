from mistralcli.cli import main

main()
