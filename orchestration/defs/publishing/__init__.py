"""The analysts' copy of the warehouse, published at the end of every warehouse-writing run."""
