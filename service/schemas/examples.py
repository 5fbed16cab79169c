"""Example specs, one per model type, shown in /docs and used by the tests."""

from __future__ import annotations

from typing import Any

SPEC_EXAMPLES: dict[str, dict[str, Any]] = {
    "mlp": {
        "summary": "mlp: the seed's vanishing-gradient experiment",
        "description": "MNIST, 784-30-30-10, sigmoid, Xavier-uniform weights, full batch of "
        "5,000 images, SGD lr 0.5: the first layer's gradient is far smaller than the last.",
        "value": {
            "name": "sigmoid-2x30",
            "tags": ["seed"],
            "model": {
                "type": "mlp",
                "hidden_sizes": [30, 30],
                "activation": "sigmoid",
                "init": {"scheme": "xavier_uniform"},
            },
            "dataset": {"name": "mnist", "split": "test", "limit": 5000},
            "training": {"optimizer": "sgd", "lr": 0.5, "full_batch": True, "steps": 800},
        },
    },
    "rnn": {
        "summary": "rnn: a tanh RNN on the adding problem",
        "description": "Hochreiter & Schmidhuber's adding problem, T = 50: the plain RNN's "
        "gradient through time vanishes and it does not beat a constant prediction (test MSE "
        "0.167). Also examples/models/rnn.json.",
        "value": {
            "name": "rnn-adding-50",
            "tags": ["rnn-vs-lstm"],
            "model": {"type": "rnn", "hidden_size": 64, "num_layers": 1, "activation": "tanh"},
            "dataset": {"name": "adding", "seq_len": 50},
            "training": {"optimizer": "adam", "lr": 0.01, "batch_size": 64, "steps": 1500, "seed": 0},
            "clipping": {"mode": "norm", "threshold": 1.0},
            "logging": {"every": 10, "timesteps_every": 1},
        },
    },
    "lstm": {
        "summary": "lstm: the same adding problem with an LSTM",
        "description": "The LSTM's cell keeps the gradient alive over 50 timesteps and it learns "
        "the sum: test MSE far below the constant predictor's 0.167. Also examples/models/lstm.json.",
        "value": {
            "name": "lstm-adding-50",
            "tags": ["rnn-vs-lstm"],
            "model": {"type": "lstm", "hidden_size": 64, "num_layers": 1},
            "dataset": {"name": "adding", "seq_len": 50},
            "training": {"optimizer": "adam", "lr": 0.01, "batch_size": 64, "steps": 1500, "seed": 0},
            "clipping": {"mode": "norm", "threshold": 1.0},
            "logging": {"every": 10, "timesteps_every": 1},
        },
    },
    "gru": {
        "summary": "gru: Pascanu's temporal-order task",
        "description": "A GRU on the temporal-order problem, T = 100.",
        "value": {
            "name": "gru-temporal-order",
            "model": {"type": "gru", "hidden_size": 64},
            "dataset": {"name": "temporal_order", "seq_len": 100},
            "training": {"optimizer": "rmsprop", "lr": 0.001, "steps": 2000},
            "clipping": {"mode": "norm", "threshold": 1.0},
        },
    },
}
