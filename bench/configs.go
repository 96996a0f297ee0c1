package bench

import (
	"bytes"
	"fmt"
	"reflect"
	"text/template"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ssegw/ssegw/config"
)

// gatewayConfigYAML encodes cfg as ssegw's configuration file. The config
// structs carry mapstructure tags only, which yaml ignores, so the fields
// are first copied into maps under those keys. Zero values are left out,
// so that the gateway applies its own defaults. A nil pointer is left out
// too, but a pointer to a zero value is kept, as for access_log: false.
func gatewayConfigYAML(cfg *config.Config) ([]byte, error) {
	data, err := yaml.Marshal(yamlTree(reflect.ValueOf(cfg)))
	if err != nil {
		return nil, fmt.Errorf("encoding the gateway configuration: %w", err)
	}
	return data, nil
}

// yamlTree converts a config value to maps, lists and scalars, with
// durations and sizes in the notation the configuration file uses.
func yamlTree(value reflect.Value) any {
	if value.Kind() == reflect.Pointer {
		if value.IsNil() {
			return nil
		}
		value = value.Elem()
	}
	switch typed := value.Interface().(type) {
	case time.Duration:
		return typed.String()
	case config.ByteSize:
		return typed.String()
	}
	switch value.Kind() {
	case reflect.Struct:
		fields := map[string]any{}
		for i := range value.NumField() {
			field := value.Type().Field(i)
			key := field.Tag.Get("mapstructure")
			if !field.IsExported() || key == "" || key == "-" || value.Field(i).IsZero() {
				continue
			}
			fields[key] = yamlTree(value.Field(i))
		}
		return fields
	case reflect.Map:
		entries := map[string]any{}
		iter := value.MapRange()
		for iter.Next() {
			entries[fmt.Sprint(iter.Key().Interface())] = yamlTree(iter.Value())
		}
		return entries
	case reflect.Slice:
		items := make([]any, value.Len())
		for i := range items {
			items[i] = yamlTree(value.Index(i))
		}
		return items
	}
	return value.Interface()
}

// proxySettings fill in the nginx and HAProxy configuration templates.
type proxySettings struct {
	// Prefix is the folder that holds the proxy's configuration, PID file
	// and temporary files.
	Prefix string
	// Listen is the proxy's host:port; Plugin is the plugin's.
	Listen string
	Plugin string
	// MaxStreams is the most concurrent streams that one client
	// connection may open. The sweep needs as many as its largest level
	// on the client's single connection.
	MaxStreams int
}

// nginxTemplate is an HTTP/2 gRPC reverse proxy for nginx 1.22 (listen ...
// http2 is that version's syntax). Every path stays in the prefix folder,
// so nginx runs as any user without touching the system's files.
var nginxTemplate = template.Must(template.New("nginx.conf").Parse(`# Written by ssegw bench; deleted when the run ends.
worker_processes 2;
worker_rlimit_nofile 16384;
pid {{.Prefix}}/nginx.pid;
error_log stderr warn;

events {
    # A client stream takes one connection to the plugin besides its
    # share of the client's connection.
    worker_connections 8192;
}

http {
    access_log off;
    client_body_temp_path {{.Prefix}}/client_body;
    proxy_temp_path {{.Prefix}}/proxy;
    fastcgi_temp_path {{.Prefix}}/fastcgi;
    uwsgi_temp_path {{.Prefix}}/uwsgi;
    scgi_temp_path {{.Prefix}}/scgi;

    # nginx 1.22 ends a connection after 1000 requests by default, with
    # GOAWAY towards the client; the benchmark's client sends all its calls
    # on one connection, as a Qlik engine does.
    keepalive_requests 1000000000;

    upstream plugin {
        server {{.Plugin}};
        keepalive 1024;
        keepalive_requests 1000000000;
    }

    server {
        listen {{.Listen}} http2;
        http2_max_concurrent_streams {{.MaxStreams}};
        client_max_body_size 0;

        location / {
            grpc_pass grpc://plugin;
            grpc_read_timeout 1h;
            grpc_send_timeout 1h;
        }
    }
}
`))

// haproxyTemplate is an HTTP/2 proxy for HAProxy 2.6, with HTTP/2 on both
// sides. With its default buffers of 16 kB, HAProxy 2.6.12 stalled on
// about half of single full-duplex Echo calls of 1.2 MB. Buffers of 128 kB,
// as large as the gateway's stream window, stopped that in 28 tries, but
// the large-call workload's concurrent calls still stall.
var haproxyTemplate = template.Must(template.New("haproxy.cfg").Parse(`# Written by ssegw bench; deleted when the run ends.
global
    nbthread 2
    maxconn 8192
    tune.h2.max-concurrent-streams {{.MaxStreams}}
    tune.bufsize 131072

defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend sse
    bind {{.Listen}} proto h2
    default_backend plugin

backend plugin
    server plugin {{.Plugin}} proto h2
`))

// tcpRelayTemplate runs HAProxy as a plain TCP relay: it copies bytes
// between the client's connection and one to the plugin without reading
// HTTP/2, so it can neither route nor observe a call. Its cost is the
// least that a process between Qlik and a plugin adds on this machine.
var tcpRelayTemplate = template.Must(template.New("tcp-relay.cfg").Parse(`# Written by ssegw bench; deleted when the run ends.
global
    nbthread 2
    maxconn 8192

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend sse
    bind {{.Listen}}
    default_backend plugin

backend plugin
    server plugin {{.Plugin}}
`))

// renderProxyConfig fills in a proxy's configuration template.
func renderProxyConfig(tmpl *template.Template, settings proxySettings) ([]byte, error) {
	var out bytes.Buffer
	if err := tmpl.Execute(&out, settings); err != nil {
		return nil, fmt.Errorf("writing the %s configuration: %w", tmpl.Name(), err)
	}
	return out.Bytes(), nil
}
