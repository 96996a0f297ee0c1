"""Serve an SSE plugin with grpcio over mutual TLS, as Python plugins do.

grpcio runs on gRPC's C core, the transport of SSE plugins written in
Python, so this script takes the place of such a plugin behind ssegw in
the end-to-end tests.

It serves qlik.sse.Connector on --address with the plugin-style
certificate folder --cert-dir (root_cert.pem, sse_server_cert.pem and
sse_server_key.pem) and requires a client certificate signed by that
root. GetCapabilities returns one function, Echo (id 0), and as
pluginIdentifier the --name followed by "CN=" and the common name of the
client certificate of the call, so that a test can tell which certificate
the gateway presented. ExecuteFunction returns each bundle it receives,
or with --cancel reads one bundle, prints "cancelling a call" and cancels
the call. With --hold it reads the call's bundles and sends no response
until the call ends, as a function that outlasts its deadline.

Message classes are built at run time from a FileDescriptorSet file of
qlik.sse. Once listening, the script prints "listening on HOST:PORT" and
serves until it is killed.

Requires grpcio and protobuf (Debian: apt-get install python3-grpcio
python3-protobuf).
"""

import argparse
import concurrent.futures
import threading

import grpc
from google.protobuf import descriptor_pb2, message_factory

SERVICE = "qlik.sse.Connector"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:0", help="host:port to listen on; port 0 picks a free port")
    parser.add_argument("--cert-dir", required=True, help="plugin certificate folder with root_cert.pem, "
                        "sse_server_cert.pem and sse_server_key.pem")
    parser.add_argument("--descriptors", required=True, help="FileDescriptorSet file that holds qlik.sse")
    parser.add_argument("--name", default="python-plugin", help="start of the pluginIdentifier")
    parser.add_argument("--cancel", action="store_true", help="cancel each ExecuteFunction call after its first bundle")
    parser.add_argument("--hold", action="store_true", help="answer no ExecuteFunction call until it ends")
    return parser.parse_args()


def load_messages(path):
    """Return the message classes of a FileDescriptorSet file, by full name."""
    with open(path, "rb") as f:
        descriptors = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    return message_factory.GetMessages(descriptors.file)


def client_common_name(context):
    """Return the common name of the caller's certificate, or "none"."""
    names = context.auth_context().get("x509_common_name", [])
    return names[0].decode("utf-8") if names else "none"


def connector(messages, name, cancel, hold):
    """Return the generic handler of qlik.sse.Connector."""
    empty = messages["qlik.sse.Empty"]
    capabilities = messages["qlik.sse.Capabilities"]
    bundled_rows = messages["qlik.sse.BundledRows"]

    def get_capabilities(request, context):
        answer = capabilities(pluginIdentifier=f"{name} CN={client_common_name(context)}", pluginVersion="1.0")
        function = answer.functions.add(name="Echo", functionId=0)
        function.params.add(name="x")
        return answer

    def execute_function(requests, context):
        if cancel:
            next(requests, None)
            print("cancelling a call", flush=True)
            context.cancel()
            return
        if hold:
            for _ in requests:
                pass
            ended = threading.Event()
            context.add_callback(ended.set)
            ended.wait()
            return
        for bundle in requests:
            yield bundle

    return grpc.method_handlers_generic_handler(SERVICE, {
        "GetCapabilities": grpc.unary_unary_rpc_method_handler(
            get_capabilities, request_deserializer=empty.FromString,
            response_serializer=capabilities.SerializeToString),
        "ExecuteFunction": grpc.stream_stream_rpc_method_handler(
            execute_function, request_deserializer=bundled_rows.FromString,
            response_serializer=bundled_rows.SerializeToString),
    })


def main():
    args = parse_args()
    messages = load_messages(args.descriptors)

    def read(file_name):
        with open(f"{args.cert_dir}/{file_name}", "rb") as f:
            return f.read()

    credentials = grpc.ssl_server_credentials(
        [(read("sse_server_key.pem"), read("sse_server_cert.pem"))],
        root_certificates=read("root_cert.pem"),
        require_client_auth=True,
    )
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((connector(messages, args.name, args.cancel, args.hold),))
    port = server.add_secure_port(args.address, credentials)
    if port == 0:
        raise SystemExit(f"cannot listen on {args.address}")
    server.start()
    host = args.address.rsplit(":", 1)[0]
    print(f"listening on {host}:{port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
