import ArgumentParser
import DuplexServer
import Foundation

/// `duplex serve`'s HTTPS and web-page options, checked before the model loads so a bad
/// certificate, key or folder fails at once (exit 2), naming the file.
struct ServeWebOptions: ParsableArguments {
    @Option(name: .customLong("tls-cert"), help: ArgumentHelp("Serve HTTPS/WSS with this PEM certificate (chain: leaf first); needs --tls-key.", valueName: "file"))
    var tlsCert: String?

    @Option(name: .customLong("tls-key"), help: ArgumentHelp("The PEM private key of --tls-cert.", valueName: "file"))
    var tlsKey: String?

    @Flag(name: .customLong("tls-self-signed"),
          help: "Serve HTTPS/WSS with a certificate made now (P-256, 30 days, for localhost, 127.0.0.1 and --host); its SHA-256 fingerprint is printed to check from another machine.")
    var tlsSelfSigned = false

    @Option(name: .customLong("static"),
            help: ArgumentHelp("What / and other paths serve: a folder (e.g. Kyutai's web client build), or none (404). Default: the built-in page.", valueName: "dir|none"))
    var staticSite: String?

    func validate() throws {
        if (tlsCert == nil) != (tlsKey == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
        if tlsSelfSigned && tlsCert != nil { throw ValidationError("--tls-self-signed makes its own certificate: drop --tls-cert/--tls-key, or it") }
    }

    var tlsGiven: Bool { tlsSelfSigned || tlsCert != nil }

    /// The TLS set-up (nil: plain) and the static site; prints what a user needs to know.
    func load(host: String) throws -> (tls: ServerTLS?, site: StaticSite) {
        let site = try staticSite.map(StaticSite.option) ?? .builtIn
        var tls: ServerTLS?
        if let tlsCert, let tlsKey {
            tls = try ServerTLS(certificateFile: tlsCert, keyFile: tlsKey)
        } else if tlsSelfSigned {
            let made = try ServerTLS.selfSigned(hosts: ServerTLS.names(listeningOn: host))
            tls = made
            warn("duplex serve: self-signed certificate for \(made.names.joined(separator: ", ")), valid until \(made.notValidAfter)")
            warn("duplex serve: SHA-256 fingerprint \(made.fingerprint)")
            warn("duplex serve: a browser will warn about it: compare the fingerprint it shows with this one before accepting")
        }
        if let tls, !tlsSelfSigned {
            warn("duplex serve: certificate for \(tls.names.joined(separator: ", ")), valid until \(tls.notValidAfter); SHA-256 fingerprint \(tls.fingerprint)")
        }
        return (tls, site)
    }
}
