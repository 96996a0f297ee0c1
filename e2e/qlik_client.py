"""Make Qlik-like SSE calls with grpcio and print what came back as JSON.

grpcio runs on gRPC's C core, the transport of the Qlik engine, so this
script takes the place of Qlik in ssegw's end-to-end tests. It only makes
the calls and reports them, and the Go test that runs it checks the
results.

Message classes are built at run time from a FileDescriptorSet file of
qlik.sse, so no generated Python code is needed.

The calls file is JSON: {"calls": [CALL, ...]}. Each CALL has a "method",
which is GetCapabilities, ExecuteFunction or EvaluateScript. A streaming
call also has "bundles", BundledRows in protobuf's JSON form that are sent
one message each. The optional "functionHeader", "scriptHeader" and
"commonHeader" hold a FunctionRequestHeader, ScriptRequestHeader and
CommonRequestHeader in JSON form, each sent serialized in its qlik-*-bin
request header.

The output is {"calls": [RESULT, ...]}, one RESULT per CALL in order. A
RESULT has "method", "code" (a grpc.StatusCode name such as OK),
"details", and "capabilities" or "bundles" in protobuf's JSON form. Its
"header" and "trailer" map each key to its list of values, with the
values of -bin keys in base64.

Requires grpcio and protobuf (Debian: apt-get install python3-grpcio
python3-protobuf).
"""

import argparse
import base64
import json
import sys

import grpc
from google.protobuf import descriptor_pb2, json_format, message_factory

SERVICE = "/qlik.sse.Connector/"

# Request header key and message type for each header field of a call.
REQUEST_HEADERS = {
    "functionHeader": ("qlik-functionrequestheader-bin", "qlik.sse.FunctionRequestHeader"),
    "scriptHeader": ("qlik-scriptrequestheader-bin", "qlik.sse.ScriptRequestHeader"),
    "commonHeader": ("qlik-commonrequestheader-bin", "qlik.sse.CommonRequestHeader"),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="gRPC target, such as ipv4:127.0.0.1:50055")
    parser.add_argument("--cert-dir", help="Qlik's certificate folder with root_cert.pem, sse_client_cert.pem and sse_client_key.pem. "
                        "Without it the channel is plaintext.")
    parser.add_argument("--server-name", help="name checked against the server certificate and sent as :authority")
    parser.add_argument("--descriptors", required=True, help="FileDescriptorSet file that holds qlik.sse")
    parser.add_argument("--calls", required=True, help="JSON file with the calls to make")
    parser.add_argument("--timeout", type=float, default=60, help="deadline of each call, in seconds")
    return parser.parse_args()


def load_messages(path):
    """Return the message classes of a FileDescriptorSet file, by full name."""
    with open(path, "rb") as f:
        descriptors = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    return message_factory.GetMessages(descriptors.file)


def open_channel(args):
    options = []
    if args.server_name:
        options.append(("grpc.ssl_target_name_override", args.server_name))
        options.append(("grpc.default_authority", args.server_name))
    if not args.cert_dir:
        return grpc.insecure_channel(args.target, options)

    def read(name):
        with open(f"{args.cert_dir}/{name}", "rb") as f:
            return f.read()

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read("root_cert.pem"),
        private_key=read("sse_client_key.pem"),
        certificate_chain=read("sse_client_cert.pem"),
    )
    return grpc.secure_channel(args.target, credentials, options)


def serialize(message):
    return message.SerializeToString()


def metadata_to_dict(metadata):
    """Group metadata by key, with the bytes values of -bin keys in base64."""
    grouped = {}
    for key, value in metadata or ():
        if key.endswith("-bin"):
            value = base64.b64encode(value).decode("ascii")
        grouped.setdefault(key, []).append(value)
    return grouped


def request_metadata(messages, call):
    metadata = []
    for field, (key, type_name) in REQUEST_HEADERS.items():
        if field in call:
            header = json_format.ParseDict(call[field], messages[type_name]())
            metadata.append((key, header.SerializeToString()))
    return metadata


def make_call(channel, messages, call, timeout):
    """Make one call and return its RESULT."""
    method = call["method"]
    metadata = request_metadata(messages, call)
    result = {"method": method}

    if method == "GetCapabilities":
        capabilities = messages["qlik.sse.Capabilities"]
        stub = channel.unary_unary(SERVICE + method, request_serializer=serialize,
                                   response_deserializer=capabilities.FromString)
        try:
            response, rpc = stub.with_call(messages["qlik.sse.Empty"](), metadata=metadata, timeout=timeout)
            result["capabilities"] = json_format.MessageToDict(response)
        except grpc.RpcError as error:
            rpc = error  # a failed call is reported like a finished one
    else:
        bundled_rows = messages["qlik.sse.BundledRows"]
        stub = channel.stream_stream(SERVICE + method, request_serializer=serialize,
                                     response_deserializer=bundled_rows.FromString)
        # grpcio sends from the generator in its own thread, bundle by
        # bundle, and half-closes when the generator ends.
        requests = (json_format.ParseDict(bundle, bundled_rows()) for bundle in call.get("bundles", []))
        rpc = stub(requests, metadata=metadata, timeout=timeout)
        result["bundles"] = []
        try:
            for response in rpc:
                result["bundles"].append(json_format.MessageToDict(response))
        except grpc.RpcError:
            pass  # the status is read from rpc below

    result["code"] = rpc.code().name
    result["details"] = rpc.details() or ""
    result["header"] = metadata_to_dict(rpc.initial_metadata())
    result["trailer"] = metadata_to_dict(rpc.trailing_metadata())
    return result


def main():
    args = parse_args()
    messages = load_messages(args.descriptors)
    with open(args.calls, encoding="utf-8") as f:
        calls = json.load(f)["calls"]
    with open_channel(args) as channel:
        results = [make_call(channel, messages, call, args.timeout) for call in calls]
    json.dump({"calls": results}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
