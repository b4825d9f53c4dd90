"""The extraction methods' defaults, written once. A module of its own, with no import, so that
both the torch functions (:func:`tvlens.extraction.function_vectors.function_vector`,
:func:`~tvlens.extraction.icv.in_context_vector`, :func:`~tvlens.extraction.i2cl.implicit_icl`,
:func:`~tvlens.extraction.state_vector.state_vector`, :func:`~tvlens.extraction.ltv.ltv`) and
the methods' classes (:mod:`tvlens.extraction.methods`, read by the CLI at start-up, whose
options ``--method-options`` sets) can read them: each class imports its function's module
when it extracts, so the function cannot import the class for its defaults without an import
cycle. (``tests/test_defaults.py`` checks that neither writes one of its own.)"""

# Function vectors (Todd et al. 2024: 10-shot prompts, the 10 heads with the largest average
# indirect effect).
FV_K = 10  # demonstrations per prompt of the AIE and the heads' mean outputs
FV_TOP_K_HEADS = 10  # heads summed into the function vector

# In-context vectors (Liu et al. 2024; the official README's example strength is 0.1, its
# notebook's 0.12).
ICV_ALPHA = 0.1
ICV_RANK = 1
ICV_PAIR = "separate"
ICV_ALPHAS = (0.01, 0.03, 0.1, 0.3, 1.0)  # tried on dev queries

# Implicit ICL (Li et al. 2025, the official calibration).
I2CL_EPOCHS = 100
I2CL_LR = 0.01
I2CL_WEIGHT_DECAY = 1e-3
I2CL_BATCH_SIZE = 2
I2CL_NOISE_SCALE = 0.001
I2CL_INIT = (0.1, 1.0)  # (context, keep) coefficients

# State vectors (Li et al. 2024; state_vector_optimize.py: beta=[1]*7, weight=[1,2,4,8,16,0],
# lr=1).
SV_OPTIMIZER = "momentum"
SV_INNER_WINDOW = 7
SV_MOMENTUM_WEIGHTS = (1.0, 2.0, 4.0, 8.0, 16.0, 0.0)
SV_MOMENTUM_LR = 1.0
SV_GROUPS = 0
SV_SHUFFLES = 5

# Learned task vectors (Saglam et al. 2025; the official lr is 5e-5 over 100000 steps, batches
# of 32: tvlens.extraction.ltv.PAPER).
LTV_STEPS = 100
LTV_LR = 0.1
LTV_BATCH_SIZE = 16
LTV_TRAIN_K = 5  # the official n_examples
LTV_TRAIN_ON = "shuffled"
LTV_COMBINE = "heads"
