"""A three-step pipeline from Python functions: load the iris data, split it, fit a classifier.

Written against the PipelineController API (ClearML's, which drover implements): only the import
line names drover. Run `python examples/make_iris_pickle.py` first; it writes the local data file
the `url` parameter points at.
"""
import os

from drover import PipelineController

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "iris.pkl")


def step_one(pickle_data_url):
    # Imports live inside the function: each step runs on its own, and these become its packages.
    import pickle

    import pandas as pd
    import sklearn  # noqa: F401  (the pickled object is a scikit-learn Bunch)
    from drover import StorageManager

    pickle_data_url = pickle_data_url or "file:///data/iris.pkl"
    local_iris_pkl = StorageManager.get_local_copy(remote_url=pickle_data_url)
    with open(local_iris_pkl, "rb") as f:
        iris = pickle.load(f)
    data_frame = pd.DataFrame(iris["data"], columns=iris["feature_names"])
    data_frame.columns += ["target"]
    data_frame["target"] = iris["target"]
    return data_frame


def step_two(data_frame, test_size=0.2, random_state=42):
    from sklearn.model_selection import train_test_split

    y = data_frame["target"]
    X = data_frame[(c for c in data_frame.columns if c != "target")]
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, random_state=random_state
    )
    return X_train, X_test, y_train, y_test


def step_three(data):
    from sklearn.linear_model import LogisticRegression

    X_train, X_test, y_train, y_test = data
    model = LogisticRegression(solver="liblinear", multi_class="auto")
    model.fit(X_train, y_train)
    return model


if __name__ == "__main__":
    pipe = PipelineController(
        project="examples",
        name="Pipeline demo",
        version="1.1",
        add_pipeline_tags=False,
    )
    pipe.set_default_execution_queue("default")
    pipe.add_parameter(name="url", description="url to pickle file", default=DATA)
    pipe.add_function_step(
        name="step_one",
        function=step_one,
        function_kwargs=dict(pickle_data_url="${pipeline.url}"),
        function_return=["data_frame"],
        cache_executed_step=True,
    )
    pipe.add_function_step(
        name="step_two",
        function=step_two,
        function_kwargs=dict(data_frame="${step_one.data_frame}"),
        function_return=["processed_data"],
        cache_executed_step=True,
    )
    pipe.add_function_step(
        name="step_three",
        function=step_three,
        function_kwargs=dict(data="${step_two.processed_data}"),
        function_return=["model"],
        cache_executed_step=True,
    )
    pipe.start()
    print("pipeline completed")
