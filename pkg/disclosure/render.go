package disclosure

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"strconv"
	"strings"
	"time"
)

// Formats a report is written in.
const (
	FormatJSON = "json"
	FormatCSV  = "csv"
	FormatHTML = "html"
)

// ContentType returns the media type of a format.
func ContentType(format string) string {
	switch format {
	case FormatCSV:
		return "text/csv; charset=utf-8"
	case FormatHTML:
		return "text/html; charset=utf-8"
	default:
		return "application/json"
	}
}

// Write writes the report in format (json, csv or html).
func Write(w io.Writer, rep *Report, format string) error {
	switch format {
	case FormatJSON, "":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if rep.Entries == nil {
			r := *rep
			r.Entries = []Entry{}
			rep = &r
		}
		return enc.Encode(rep)
	case FormatCSV:
		return writeCSV(w, rep)
	case FormatHTML:
		t, err := template.New("report").Funcs(template.FuncMap{
			"when": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 MST") },
			"join": func(s []string) string { return strings.Join(s, ", ") },
		}).Parse(pageHTML)
		if err != nil {
			return fmt.Errorf("parsing the report page: %w", err)
		}
		return t.Execute(w, rep)
	}
	return fmt.Errorf("unknown format %q: use json, csv or html", format)
}

func writeCSV(w io.Writer, rep *Report) error {
	cw := csv.NewWriter(w)
	header := []string{"kind", "time", "message_id", "source", "source_ods", "recipient", "recipient_ods", "route",
		"purpose", "legal_basis", "classes", "decision", "rule", "reason", "redacted", "redactions", "opt_out_gate", "withheld_exemption", "resent_as_stored"}
	if err := cw.Write(header); err != nil {
		return err
	}
	for _, e := range rep.Entries {
		withheld := ""
		if e.Withheld != nil {
			withheld = e.Withheld.Exemption
		}
		row := []string{string(e.Kind), e.Time.UTC().Format(time.RFC3339Nano), e.MessageID, e.Source.Name, e.Source.ODS,
			e.Recipient.Name, e.Recipient.ODS, e.Route, e.Purpose, e.LegalBasis, strings.Join(e.Classes, ";"), e.Decision,
			e.Rule, e.Reason, strconv.Itoa(e.Redacted), redactionText(e.Redactions), strconv.FormatBool(e.OptOutGate), withheld, strconv.FormatBool(e.ResentAsStored)}
		for i, c := range row {
			row[i] = cell(c)
		}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// cell keeps a spreadsheet from reading a value as a formula.
func cell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

func redactionText(rs []Redaction) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.Outcome + ": " + r.What
	}
	return strings.Join(parts, "; ")
}

// pageHTML is the HTML report, for html/template, which escapes every
// value.
const pageHTML = `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Disclosure report</title>
<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #999;padding:4px;vertical-align:top}.withheld{background:#fee}</style>
</head>
<body>
<h1>Disclosure report</h1>
<p>From {{when .From}} to {{when .To}}. Generated {{when .Generated}}. View: {{.View}}.</p>
<p>{{.Note}}</p>
{{if .Entries}}<table>
<thead><tr><th>When</th><th>What happened</th><th>Recipient</th><th>From</th><th>Route</th><th>Purpose</th><th>Legal basis</th><th>Data</th><th>Kept back</th><th>Opt-out checked</th><th>Message</th></tr></thead>
<tbody>
{{range .Entries}}<tr{{if .Withheld}} class="withheld"{{end}}>
<td>{{when .Time}}</td>
<td>{{if eq .Kind "refused"}}Refused: {{.Reason}}{{else}}Sent{{if .ResentAsStored}} (resent by an operator as stored: consent was not decided again){{end}}{{end}}{{if .Withheld}}<br>Withheld from the patient ({{.Withheld.Exemption}}): {{.Withheld.Reason}}{{end}}</td>
<td>{{.Recipient.Name}}{{if .Recipient.ODS}} ({{.Recipient.ODS}}){{end}}</td>
<td>{{.Source.Name}}{{if .Source.ODS}} ({{.Source.ODS}}){{end}}</td>
<td>{{.Route}}</td>
<td>{{.Purpose}}</td>
<td>{{.LegalBasis}}</td>
<td>{{join .Classes}}</td>
<td>{{if .Redactions}}<ul>{{range .Redactions}}<li>{{.Outcome}}: {{.What}}</li>{{end}}</ul>{{else}}nothing{{end}}</td>
<td>{{if .OptOutGate}}yes{{else}}no{{end}}</td>
<td>{{.MessageID}}</td>
</tr>
{{end}}</tbody>
</table>{{else}}<p>No disclosures in this period.</p>{{end}}
</body>
</html>
`
