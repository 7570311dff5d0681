import Foundation

/// How a harness run is shown: a table for people, JSON for machines, SVG for eyes.
extension BenchHarness.Report {
    /// JSON with the keys tools rely on: latency_ms {p50,p95,p99,max}, stages_ms {stage: {p50,p95}},
    /// real_time_factor, deadline_misses, allocations_per_frame (null: not counted), peak_rss_bytes,
    /// frames, context_frames, and for a local LM kv_cache, weight_bytes_per_step and
    /// kv_bytes_per_step {start, end}, with capture processing capture {processing,
    /// cost_ms_per_frame, erle_db, erle_after_2s_db, webrtc_erle_db, echo_delay_ms, room}
    /// (+ counters and `extra`). Written by `JSONOutput`, so any string is
    /// escaped and a non-finite number becomes null.
    public func json(extra: [String: String] = [:]) -> String {
        func summary(_ p: Percentiles, max: Bool = false) -> [String: Any] {
            var d: [String: Any] = ["p50": p.percentile(50), "p95": p.percentile(95), "p99": p.percentile(99), "mean": p.mean]
            if max { d["max"] = p.count > 0 ? p.maximum : Double.nan }
            return d
        }
        var object: [String: Any] = [
            "frames": frames,
            "context_frames": contextFrames,
            "latency_ms": summary(latency, max: true),
            "stages_ms": Dictionary(uniqueKeysWithValues: stages.map { ($0.name, summary($0.values)) }),
            "real_time_factor": realTimeFactor,
            "deadline_misses": deadlineMisses,
            "allocations_per_frame": allocationsPerFrame.map { $0 as Any } ?? NSNull(),
            "peak_rss_bytes": peakRSSBytes,
            "underruns": counters.underruns,
            "overruns": counters.overruns,
            "dropped_output_frames": counters.droppedOutputFrames,
            "dropped_input_frames": counters.droppedInputFrames,
            "wall_seconds": wallSeconds,
        ]
        if let lm = lmStep {
            object["kv_cache"] = lm.kvCache
            object["weight_bytes_per_step"] = lm.weightBytes
            object["kv_bytes_per_step"] = ["start": lm.kvBytesAtStart, "end": lm.kvBytesAtEnd]
        }
        if let c = capture {
            object["capture"] = ["processing": c.summary, "cost_ms_per_frame": summary(c.cost, max: true),
                                 "erle_db": c.erleDecibels.map { $0 as Any } ?? NSNull(),
                                 "erle_after_2s_db": c.settledErleDecibels.map { $0 as Any } ?? NSNull(),
                                 "webrtc_erle_db": c.libraryErleDecibels.map { $0 as Any } ?? NSNull(),
                                 "echo_delay_ms": c.echoDelayMilliseconds.map { $0 as Any } ?? NSNull(),
                                 "room": c.room.map { $0 as Any } ?? NSNull()] as [String: Any]
        }
        for (k, v) in extra { object[k] = v }
        return ((try? JSONOutput.line(object, pretty: true)) ?? "{}") + "\n"
    }

    /// The table for people.
    public func table(title: String) -> String {
        func f(_ v: Double) -> String { String(format: "%8.1f", v) }
        var lines = [title, ""]
        lines.append("stage (ms)          p50      p95      p99     mean")
        for (name, v) in stages {
            lines.append(name.padding(toLength: 16, withPad: " ", startingAt: 0) + f(v.percentile(50)) + " " + f(v.percentile(95)) + " " + f(v.percentile(99)) + " " + f(v.mean))
        }
        if let c = capture {
            // The capture thread's own stage: not a term of the sum below (it runs while the
            // next period is being captured), but what the processing costs per frame.
            lines.append("capture (\(c.summary))")
            lines.append("  per frame     " + f(c.cost.percentile(50)) + " " + f(c.cost.percentile(95)) + " " + f(c.cost.percentile(99)) + " " + f(c.cost.mean))
        }
        lines.append("mic→speaker     " + f(latency.percentile(50)) + " " + f(latency.percentile(95)) + " " + f(latency.percentile(99)) + " " + f(latency.mean) + "   max " + String(format: "%.1f", latency.maximum))
        lines.append("")
        lines.append("frames measured        \(frames)")
        lines.append(String(format: "real-time factor       %.3f  (model compute ÷ audio time; < 1 keeps up)", realTimeFactor))
        lines.append("deadline misses        \(deadlineMisses)  (frames whose compute exceeded 80 ms)")
        lines.append("underruns / overruns   \(counters.underruns) / \(counters.overruns)   dropped frames: input \(counters.droppedInputFrames), output \(counters.droppedOutputFrames)")
        lines.append("context at start       \(contextFrames) frames")
        if let lm = lmStep {
            func mb(_ bytes: Int) -> String { String(format: "%.2f MB", Double(bytes) / 1e6) }
            lines.append("LM bytes per step      weights \(mb(lm.weightBytes)), KV cache (\(lm.kvCache)) \(mb(lm.kvBytesAtStart)) at start → \(mb(lm.kvBytesAtEnd)) at end")
        }
        if let c = capture {
            func db(_ x: Double?) -> String { x.map { String(format: "%.1f dB", $0) } ?? "–" }
            lines.append("echo cancellation      ERLE \(db(c.settledErleDecibels)) after 2 s of far-end speech, \(db(c.erleDecibels)) over the last second"
                         + (c.libraryErleDecibels != nil ? " (WebRTC's estimate \(db(c.libraryErleDecibels)))" : "")
                         + ", echo delay " + (c.echoDelayMilliseconds.map { "\($0) ms" } ?? "not found"))
            if let room = c.room { lines.append("simulated room         \(room)") }
        }
        lines.append("allocations per frame  " + (allocationsPerFrame.map { String(format: "%.2f", $0) } ?? "not counted"))
        lines.append(String(format: "peak RSS               %.1f MiB", Double(peakRSSBytes) / 1_048_576))
        return lines.joined(separator: "\n") + "\n"
    }

    /// Latency per frame over time (left) and its histogram (right), as a standalone SVG.
    public func svg(title: String) -> String {
        let width = 960.0, height = 360.0, pad = 40.0
        let plotW = 600.0, histX = pad + plotW + 60, histW = width - histX - 20
        let values = totals
        let maxV = max(200, (values.max() ?? 200) * 1.1)
        func y(_ v: Double) -> Double { height - pad - (v / maxV) * (height - 2 * pad) }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"11\">\n"
        svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        svg += "<text x=\"\(pad)\" y=\"18\" font-size=\"13\">\(escape(title))</text>\n"
        // Axes and guide lines (the 160 ms algorithmic floor and the 200 ms budget).
        svg += "<line x1=\"\(pad)\" y1=\"\(height - pad)\" x2=\"\(pad + plotW)\" y2=\"\(height - pad)\" stroke=\"black\"/>\n"
        svg += "<line x1=\"\(pad)\" y1=\"\(pad)\" x2=\"\(pad)\" y2=\"\(height - pad)\" stroke=\"black\"/>\n"
        for (v, color, label) in [(160.0, "#888", "160 ms floor"), (200.0, "#c33", "200 ms budget")] {
            svg += "<line x1=\"\(pad)\" y1=\"\(y(v))\" x2=\"\(pad + plotW)\" y2=\"\(y(v))\" stroke=\"\(color)\" stroke-dasharray=\"4 3\"/>\n"
            svg += "<text x=\"\(pad + plotW - 80)\" y=\"\(y(v) - 3)\" fill=\"\(color)\">\(label)</text>\n"
        }
        for tick in stride(from: 0.0, through: maxV, by: maxV > 600 ? 200 : 50) {
            svg += "<text x=\"4\" y=\"\(y(tick) + 4)\">\(Int(tick))</text>\n"
        }
        svg += "<text x=\"\(pad + plotW / 2 - 60)\" y=\"\(height - 10)\">frame (80 ms each) → latency ms</text>\n"
        if values.count > 1 {
            let points = values.enumerated().map { i, v in
                String(format: "%.1f,%.1f", pad + Double(i) / Double(values.count - 1) * plotW, y(v))
            }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"#1f6fb2\" stroke-width=\"1.2\" points=\"\(points)\"/>\n"
        }
        // Histogram, horizontal bars on the same latency axis.
        let bins = 40
        var counts = [Int](repeating: 0, count: bins)
        for v in values { counts[min(bins - 1, Int(v / maxV * Double(bins)))] += 1 }
        let maxCount = max(1, counts.max() ?? 1)
        let binH = (height - 2 * pad) / Double(bins)
        for (i, c) in counts.enumerated() where c > 0 {
            let w = Double(c) / Double(maxCount) * histW
            svg += String(format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#1f6fb2\"/>\n", histX, height - pad - Double(i + 1) * binH, w, binH - 0.5)
        }
        svg += "<text x=\"\(histX)\" y=\"\(height - 10)\">histogram (frames)</text>\n"
        svg += "</svg>\n"
        return svg
    }

    private func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
