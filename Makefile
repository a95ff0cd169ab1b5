# Thin aliases for ./dev (which also works without make on a fresh machine).
.PHONY: setup demo narrate-demo test lint bench
setup demo narrate-demo test lint bench:
	./dev $@
