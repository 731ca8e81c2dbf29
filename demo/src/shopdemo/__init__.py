"""An example shop: the components that stacks/*.oneiric choose between."""
