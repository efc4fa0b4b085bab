from soleil.runner.cli import main

main()
