"""Print the Makefile's documented targets (lines `target: ... ## help`)."""
import re
import sys

PATTERN = re.compile(r"^([a-zA-Z0-9_-]+):.*?## (.*)$")


def main(makefile: str) -> None:
    print("Usage: make [target] [VAR=value]\n")
    with open(makefile) as handle:
        for line in handle:
            match = PATTERN.match(line)
            if match:
                print(f"  {match.group(1):<20} {match.group(2)}")
    print("  defconfig-NAME       .config from defconfigs/NAME (see list-defconfigs)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "Makefile")
