"""Loading the trained TensorFlow models (DIET, the response selector, TED) for serving
without running a training step first.

Rasa 3.6's `RasaModel.load` builds a model's variables by compiling it with an Adam
optimizer and fitting it on one example, then reads the trained weights over them, then
predicts once to trace the prediction graph. The fit traces and runs a whole training
graph (gradients, optimizer slots) that serving never uses: measured on Parley's
model, loading took 75 s and 1,110 MB, DIET alone 46 s and 668 MB.

`load_for_serving` builds the variables by running the prediction step once eagerly,
reads the trained weights over them (the checkpoint's optimizer slots are left unread),
and then does what Rasa does last: predicts once, tracing the graph with the loaded
weights. Prediction-only variables are all a served model has; anything that only
training creates keeps its checkpoint value pending and is never used. Fine-tuning
(`finetune_mode`) and a model loaded without a prediction example keep Rasa's own
loader. tests/model/test_model_loading.py checks that both loaders give the same
predictions on the trained model.
"""

from __future__ import annotations

import logging
from typing import Any

import tensorflow as tf
from rasa.utils.tensorflow.model_data import RasaModelData
from rasa.utils.tensorflow.models import RasaModel

log = logging.getLogger(__name__)

RASAS_LOAD = RasaModel.load.__func__


def load_for_serving(
    cls: type[RasaModel],
    model_file_name: str,
    model_data_example: RasaModelData,
    predict_data_example: RasaModelData | None = None,
    finetune_mode: bool = False,
    *args: Any,
    **kwargs: Any,
) -> RasaModel:
    if finetune_mode or predict_data_example is None:
        return RASAS_LOAD(
            cls, model_file_name, model_data_example, predict_data_example, finetune_mode,
            *args, **kwargs,
        )  # fmt: skip
    model = cls(*args, **kwargs)
    config = kwargs.get("config", {})
    # As Rasa compiles it (fine-tuning and `fit` stay possible), without fitting.
    model.compile(
        optimizer=tf.keras.optimizers.Adam(config.get("learning_rate", 0.001)),
        run_eagerly=config.get("run_eagerly"),
    )
    # Create the variables prediction uses: one eager prediction with initial weights.
    batch = next(iter(_batches(predict_data_example)))
    model._training = False
    model.prepare_for_predict()
    model.predict_step(batch)
    model.load_weights(model_file_name).expect_partial()
    # What the first prediction computed from the initial weights (e.g. DIET's label
    # embeddings) is computed again from the trained ones, and the graph traced with them.
    model.prepared_for_prediction = False
    model._tf_predict_step = None
    model.run_inference(predict_data_example)
    log.debug("model_loading.loaded model=%s file=%s", cls.__name__, model_file_name)
    return model


def _batches(data: RasaModelData) -> Any:
    from rasa.utils import train_utils

    generator, _ = train_utils.create_data_generators(
        model_data=data, batch_sizes=1, epochs=1, shuffle=False
    )
    return (item[0] for item in generator)


def install() -> None:
    RasaModel.load = classmethod(load_for_serving)  # type: ignore[arg-type]
