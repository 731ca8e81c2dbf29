"""An implementation the E0603 case's entry point names."""


class Memory:
    pass
