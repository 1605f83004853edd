from latentwalk.cli import main

main()
