"""The function vector's defaults, written once (Todd et al. 2024: 10-shot prompts, the 10
heads with the largest average indirect effect). A module of its own, with no import, so that
both the torch function (:func:`tvlens.extraction.function_vectors.function_vector`) and the
method's class (:class:`tvlens.extraction.methods.FunctionVector`, read by the CLI at start-up)
can read it: the class imports the function's module, so the function cannot import the class
for its default without an import cycle. (The test
``test_function_vector_and_its_method_read_one_default`` checks that the two agree.)"""

FV_K = 10  # demonstrations per prompt of the AIE and the heads' mean outputs
FV_TOP_K_HEADS = 10  # heads summed into the function vector
