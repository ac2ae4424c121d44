"""The rivals a researcher weighs against FNGD in 2026, from kept libraries, registered as
entry points of ``fngd-bench`` (``pyproject.toml``) the way a plugin registers its own.

| label       | what                                         | library (extra ``rivals``)  |
| ----------- | -------------------------------------------- | --------------------------- |
| `muon`      | Muon on weight matrices, AdamW on the rest   | pytorch-optimizer ``Muon``  |
| `soap`      | SOAP: Adam in Shampoo's eigenbasis           | pytorch-optimizer ``SOAP``  |
| `psgd-kron` | PSGD with Kronecker-factored preconditioners | pytorch-optimizer ``Kron``  |
| `sf-adamw`  | Schedule-Free AdamW                          | schedulefree                |

Each module holds one rival: its factory, defaults and the space ``fngd-bench tune``
searches. The libraries are imported when a rival is built, never before; a missing one
is one ``PluginError`` saying what to install (``pip install 'fngd-bench[rivals]'``).

Every rival is tuned over the same three hyperparameters as AdamW, on the same ranges
(``SPACE``): the learning rate, the decoupled weight decay and the warm-up fraction; the
rest is its library's recommended setting, recorded with every run.
"""
