"""The papers the diagnosis and the reproductions cite, in one place."""

PASCANU_2013 = "Pascanu, Mikolov & Bengio 2013, On the difficulty of training recurrent neural networks (Alg. 1)"
GLOROT_2010 = "Glorot & Bengio 2010, Understanding the difficulty of training deep feedforward neural networks"
HE_2015 = "He, Zhang, Ren & Sun 2015, Delving deep into rectifiers (Kaiming initialisation)"
HOCHREITER_1997 = "Hochreiter & Schmidhuber 1997, Long short-term memory"
GERS_2000 = "Gers, Schmidhuber & Cummins 2000, Learning to forget: continual prediction with LSTM"
JOZEFOWICZ_2015 = "Jozefowicz, Zaremba & Sutskever 2015, An empirical exploration of recurrent network architectures"
IOFFE_2015 = "Ioffe & Szegedy 2015, Batch normalization: accelerating deep network training by reducing internal covariate shift"
