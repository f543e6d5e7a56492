from .cli import PROGRAM, main

main(prog_name=PROGRAM)
