from chatwright.cli import main

main()
