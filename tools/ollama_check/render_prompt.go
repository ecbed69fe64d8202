// Renders the prompt Ollama gives a model for each conversation of a cases file, from an exported
// Modelfile's TEMPLATE and SYSTEM, and compares it with the case's expected text. No Ollama binary
// runs on these machines, so this does what Ollama's server does before the model sees a token:
//   - server/routes.go (chat): the Modelfile's SYSTEM is prepended as a system message unless the
//     request's first message is a system message;
//   - template/template.go (collate): every system message's content is joined into .System AND the
//     message stays in .Messages; consecutive messages of one role (not "tool") are merged;
//   - the TEMPLATE is executed by Go's text/template, Ollama's own engine, so its whitespace
//     trimming ({{- -}}), slice/len/eq and range semantics are the real ones.
// A template that renders system messages inside its range therefore shows the system prompt twice.
//
//   go run render_prompt.go MODELFILE CASES.json
// CASES.json: [{"name", "messages": [{"role", "content"}], "expect"}], "{{SYSTEM}}" in expect standing
// for the Modelfile's SYSTEM text. Exit 0 when every case renders as expected, 1 when one does not,
// 2 on bad input.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type testCase struct {
	Name     string    `json:"name"`
	Messages []message `json:"messages"`
	Expect   string    `json:"expect"`
}

// tripleQuoted returns the text of `KEY """..."""` in a Modelfile.
func tripleQuoted(modelfile, key string) (string, error) {
	open := key + ` """`
	i := strings.Index(modelfile, open)
	if i < 0 || (i > 0 && modelfile[i-1] != '\n') {
		return "", fmt.Errorf("no %s \"\"\"...\"\"\" block", key)
	}
	rest := modelfile[i+len(open):]
	j := strings.Index(rest, `"""`)
	if j < 0 {
		return "", fmt.Errorf("%s: no closing \"\"\"", key)
	}
	return rest[:j], nil
}

func render(tmpl *template.Template, system string, msgs []message) (string, error) {
	if len(msgs) > 0 && msgs[0].Role != "system" && system != "" {
		msgs = append([]message{{Role: "system", Content: system}}, msgs...)
	}
	var systems []string
	var collated []*message
	for i := range msgs {
		m := msgs[i]
		if m.Role == "system" {
			systems = append(systems, m.Content)
		}
		if n := len(collated); n > 0 && collated[n-1].Role == m.Role && m.Role != "tool" {
			collated[n-1].Content += "\n\n" + m.Content
		} else {
			collated = append(collated, &m)
		}
	}
	var b strings.Builder
	err := tmpl.Execute(&b, map[string]any{"System": strings.Join(systems, "\n\n"), "Messages": collated})
	return b.String(), err
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: render_prompt MODELFILE CASES.json")
		os.Exit(2)
	}
	fail := func(code int, format string, a ...any) {
		fmt.Fprintf(os.Stderr, format+"\n", a...)
		os.Exit(code)
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail(2, "%v", err)
	}
	text, err := tripleQuoted(string(raw), "TEMPLATE")
	if err != nil {
		fail(2, "%s: %v", os.Args[1], err)
	}
	system, err := tripleQuoted(string(raw), "SYSTEM")
	if err != nil {
		fail(2, "%s: %v", os.Args[1], err)
	}
	tmpl, err := template.New("Modelfile").Parse(text)
	if err != nil {
		fail(2, "%s: TEMPLATE: %v", os.Args[1], err)
	}
	rawCases, err := os.ReadFile(os.Args[2])
	if err != nil {
		fail(2, "%v", err)
	}
	var cases []testCase
	if err := json.Unmarshal(rawCases, &cases); err != nil || len(cases) == 0 {
		fail(2, "%s: not a JSON list of cases (%v)", os.Args[2], err)
	}
	failed := 0
	for _, c := range cases {
		got, err := render(tmpl, system, c.Messages)
		if err != nil {
			fail(1, "%s: %v", c.Name, err)
		}
		want := strings.ReplaceAll(c.Expect, "{{SYSTEM}}", system)
		if got != want {
			failed++
			fmt.Printf("DIFFERS %s\n--- Ollama renders\n%q\n--- expected\n%q\n", c.Name, got, want)
		} else {
			fmt.Printf("same    %s\n", c.Name)
		}
	}
	fmt.Printf("%d of %d cases render as expected\n", len(cases)-failed, len(cases))
	if failed > 0 {
		os.Exit(1)
	}
}
