"""Tables and figures from run folders, and the paper's numbers to set beside them."""
