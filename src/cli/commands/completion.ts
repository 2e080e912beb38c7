import { handler } from '../context.js';
import type { Register } from '../register.js';

// Each script asks qmaint itself for the candidates (yargs answers --get-yargs-completions
// from the same parser that runs the commands), naming its shell so the answer comes in
// that shell's format: plain words for bash, "word:description" for zsh, "word<TAB>description" for fish.
const SCRIPTS = {
  bash: `# qmaint completion for bash.
# Install: qmaint completion bash > ~/.local/share/bash-completion/completions/qmaint
#      or: echo 'source <(qmaint completion bash)' >> ~/.bashrc
_qmaint_completions() {
  local IFS=$'\\n'
  local candidates
  candidates=$(SHELL=bash qmaint --get-yargs-completions "\${COMP_WORDS[@]:0:COMP_CWORD+1}" 2>/dev/null)
  COMPREPLY=($(compgen -W "$candidates" -- "\${COMP_WORDS[COMP_CWORD]}"))
}
complete -o bashdefault -o default -F _qmaint_completions qmaint
`,
  zsh: `#compdef qmaint
# qmaint completion for zsh.
# Install: qmaint completion zsh > "\${fpath[1]}/_qmaint"   (then start a new shell)
#      or: echo 'source <(qmaint completion zsh)' >> ~/.zshrc   (after compinit)
_qmaint() {
  local -a candidates
  candidates=(\${(f)"$(SHELL=zsh qmaint --get-yargs-completions "\${(@)words[1,CURRENT]}" 2>/dev/null)"})
  if (( \${#candidates} )); then
    _describe 'qmaint' candidates
  else
    _default
  fi
}
if [[ "\${zsh_eval_context[-1]}" == loadautofunc ]]; then
  _qmaint "$@"
else
  compdef _qmaint qmaint
fi
`,
  fish: `# qmaint completion for fish.
# Install: qmaint completion fish > ~/.config/fish/completions/qmaint.fish
function __qmaint_complete
    env SHELL=fish qmaint --get-yargs-completions (commandline -opc) (commandline -ct) 2>/dev/null
end
complete -c qmaint -f -a '(__qmaint_complete)'
`,
} as const;

type Shell = keyof typeof SCRIPTS;

const register: Register = (y) => {
  y.command(
    'completion <shell>',
    'print a shell completion script (commands, subcommands and options complete on TAB)',
    (b) => b.positional('shell', { choices: Object.keys(SCRIPTS) as Shell[], description: 'the shell to complete in' }),
    handler<{ shell: Shell }>((ctx, argv) => {
      const script = SCRIPTS[argv.shell];
      ctx.out.emit({ ok: true, shell: argv.shell, script }, () => ctx.out.line(script.trimEnd()));
      return Promise.resolve();
    }),
  );
};

export default register;
