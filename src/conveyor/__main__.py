"""`python -m conveyor ...` runs the command line."""

from conveyor.cli import main

if __name__ == "__main__":
    main()
