"""Animal-MNIST silhouettes as a second domain for the folder recipe."""
