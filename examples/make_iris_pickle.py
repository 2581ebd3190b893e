"""Writes examples/data/iris.pkl: scikit-learn's bundled iris data set, pickled.

The pipeline example reads its data from this local file, so it runs without network access.
"""
import os
import pickle

from sklearn.datasets import load_iris

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "iris.pkl")
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path + ".tmp", "wb") as f:
    pickle.dump(load_iris(), f)
os.replace(path + ".tmp", path)
print(f"wrote {path}")
