"""Identity model for Triton's python backend: returns its input unchanged.

A smoke model for the local stack: if it answers, the tritonserver binary, the python
backend stub, libpython and the model repository are wired correctly.
"""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out = pb_utils.Tensor("OUTPUT0", data)
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
