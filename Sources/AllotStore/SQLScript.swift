import Foundation

/// Splits a SQL script into statements, since PostgresNIO sends one statement per query (extended protocol).
/// Semicolons inside quotes ('…', E'…', "…"), dollar quotes ($$…$$, $tag$…$tag$) and comments do not split.
public enum SQLScript {
    public static func statements(_ script: String) -> [String] {
        let chars = Array(script.unicodeScalars)
        var statements: [String] = []
        var current = String.UnicodeScalarView()
        var i = 0
        func flush() {
            let s = String(current).trimmingCharacters(in: .whitespacesAndNewlines)
            if !s.isEmpty && !Self.onlyComments(s) { statements.append(s) }
            current = String.UnicodeScalarView()
        }
        while i < chars.count {
            let c = chars[i]
            let next: Unicode.Scalar? = i + 1 < chars.count ? chars[i + 1] : nil
            if c == "-" && next == "-" {
                while i < chars.count && chars[i] != "\n" { current.append(chars[i]); i += 1 }
                continue
            }
            if c == "/" && next == "*" {
                var depth = 0
                repeat {
                    if chars[i] == "/" && i + 1 < chars.count && chars[i + 1] == "*" {
                        depth += 1; current.append(chars[i]); i += 1
                    } else if chars[i] == "*" && i + 1 < chars.count && chars[i + 1] == "/" {
                        depth -= 1; current.append(chars[i]); i += 1
                    }
                    current.append(chars[i])
                    i += 1
                } while i < chars.count && depth > 0
                continue
            }
            if c == "'" || c == "\"" {
                let escapes = c == "'" && i > 0 && (chars[i - 1] == "E" || chars[i - 1] == "e")
                current.append(c)
                i += 1
                while i < chars.count {
                    let d = chars[i]
                    current.append(d)
                    i += 1
                    if escapes && d == "\\" && i < chars.count { current.append(chars[i]); i += 1; continue }
                    if d == c {
                        if i < chars.count && chars[i] == c { current.append(chars[i]); i += 1; continue }  // doubled quote
                        break
                    }
                }
                continue
            }
            if c == "$", let tag = Self.dollarTag(chars, at: i) {
                current.append(contentsOf: tag.unicodeScalars)
                i += tag.unicodeScalars.count
                let closing = Array(tag.unicodeScalars)
                while i < chars.count {
                    if chars[i] == "$" && i + closing.count <= chars.count && Array(chars[i..<(i + closing.count)]) == closing {
                        current.append(contentsOf: tag.unicodeScalars)
                        i += closing.count
                        break
                    }
                    current.append(chars[i])
                    i += 1
                }
                continue
            }
            if c == ";" {
                flush()
                i += 1
                continue
            }
            current.append(c)
            i += 1
        }
        flush()
        return statements
    }

    /// `$$` or `$tag$` starting at `i`, where a tag is letters, digits and `_` not starting with a digit.
    static func dollarTag(_ chars: [Unicode.Scalar], at i: Int) -> String? {
        var j = i + 1
        var tag = "$"
        while j < chars.count {
            let c = chars[j]
            if c == "$" { return tag + "$" }
            let isIdent = c.properties.isAlphabetic || c == "_" || (j > i + 1 && ("0"..."9").contains(c))
            if !isIdent { return nil }
            tag.unicodeScalars.append(c)
            j += 1
        }
        return nil
    }

    static func onlyComments(_ s: String) -> Bool {
        s.split(separator: "\n").allSatisfy {
            $0.trimmingCharacters(in: .whitespaces).hasPrefix("--") || $0.trimmingCharacters(in: .whitespaces).isEmpty
        }
    }
}
