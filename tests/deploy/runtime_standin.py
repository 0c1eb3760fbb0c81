"""A local stand-in for SageMaker's runtime front end, so that boto3's `invoke_endpoint` is the client of a real
`serve` process.

What it enforces and answers is InvokeEndpoint's reference ("InvokeEndpoint",
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpoint.html): the request is
`POST /endpoints/{EndpointName}/invocations`, signed with Signature Version 4 ("Authenticating Requests (AWS
Signature Version 4)", https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-authenticating-requests.html: an
`Authorization: AWS4-HMAC-SHA256 ...` header and `X-Amz-Date`); the container gets Content-Type, Accept and the
custom attributes (and the target model); a 200 answer returns the body, Content-Type,
X-Amzn-Invoked-Production-Variant and the container's X-Amzn-SageMaker-Custom-Attributes; an error status of the
container becomes ModelError (424) with OriginalStatusCode and OriginalMessage; an endpoint that does not exist is
ValidationError (400); ServiceUnavailable (503) can be injected, to see the client retry.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ACCOUNT = "123456789012"
VARIANT = "AllTraffic"
PATH = re.compile(r"^/endpoints/([a-zA-Z0-9](?:-*[a-zA-Z0-9])*)/invocations$")
FORWARDED = ("Content-Type", "Accept", "X-Amzn-SageMaker-Custom-Attributes", "X-Amzn-SageMaker-Target-Model")


class RuntimeStandIn:
    def __init__(self) -> None:
        self.endpoints: dict[str, str] = {}  # endpoint name -> the serve process's URL
        self.unavailable = 0  # the next n invocations answer ServiceUnavailable
        self.invocations: list[str] = []  # endpoint names, in order of arrival
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # request lines name endpoints only, but keep test output clean
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                match = PATH.match(self.path)
                if match is None:
                    return self.error(404, "UnknownOperationException", "unknown operation")
                if not self.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256 Credential=") \
                        or not self.headers.get("X-Amz-Date"):
                    return self.error(403, "MissingAuthenticationTokenException", "request is not signed (SigV4)")
                name = match[1]
                standin.invocations.append(name)
                if standin.unavailable > 0:
                    standin.unavailable -= 1
                    return self.error(503, "ServiceUnavailable", "service unavailable")
                if name not in standin.endpoints:
                    return self.error(400, "ValidationError", f"Endpoint {name} of account {ACCOUNT} not found.")
                headers = {key: self.headers[key] for key in FORWARDED if self.headers.get(key)}
                request = urllib.request.Request(standin.endpoints[name] + "/invocations", data=body, headers=headers)
                try:
                    with urllib.request.urlopen(request, timeout=120) as answer:
                        self.answer(200, answer.read(), answer.headers)
                except urllib.error.HTTPError as error:
                    message = error.read().decode(errors="replace")
                    log_stream = f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/{name}"
                    self.error(424, "ModelError", f"Received client error ({error.code}) from primary with message "
                               f'"{message}".', OriginalStatusCode=error.code, OriginalMessage=message,
                               LogStreamArn=log_stream)

            def answer(self, status: int, body: bytes, headers) -> None:
                self.send_response(status)
                self.send_header("Content-Type", headers.get("Content-Type", "application/octet-stream"))
                self.send_header("X-Amzn-Invoked-Production-Variant", VARIANT)
                if headers.get("X-Amzn-SageMaker-Custom-Attributes"):
                    self.send_header("X-Amzn-SageMaker-Custom-Attributes",
                                     headers["X-Amzn-SageMaker-Custom-Attributes"])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def error(self, status: int, code: str, message: str, **fields) -> None:
                body = json.dumps({"message": message, **fields}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("x-amzn-ErrorType", code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
