"""Suite -> points: grids, random draws, edges, threshold neighbourhoods, regions, and
real-data points taken from recorded reference fits of the shipped count matrices.
"""
