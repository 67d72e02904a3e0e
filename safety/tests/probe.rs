//! scratch experiment (to be replaced)
use std::path::Path;
use candle_core::{Device, Tensor, D};
use trainer::data::TextTokenizer;
use trainer::model::{log_softmax_last_dim, Llama};

fn logp(m: &Llama, tok: &TextTokenizer, p: &str, c: &str) -> f64 {
    let mut ids = tok.encode(p, true).expect("enc");
    let s = ids.len();
    ids.extend(tok.encode(c, false).expect("enc"));
    ids.push(tok.eos.expect("eos"));
    let t = ids.len();
    let input = Tensor::from_vec(ids.clone(), (1, t), &Device::Cpu).expect("t");
    let lp = log_softmax_last_dim(&m.forward(&input).expect("f")).expect("ls");
    let lp: Vec<Vec<f32>> = lp.squeeze(0).expect("s").to_vec2().expect("v");
    (s..t).map(|j| f64::from(lp[j - 1][ids[j] as usize])).sum()
}

fn lse(v: &[f64]) -> f64 {
    let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

#[test]
#[ignore]
fn experiment() {
    let base = Path::new("/work/main/examples/tiny-llama/base");
    let eval: Vec<(String, String)> = std::fs::read_to_string("/work/main/examples/tiny-llama/eval.jsonl").expect("r")
        .lines().map(|l| { let v: serde_json::Value = serde_json::from_str(l).expect("j"); (v["prompt"].as_str().expect("p").to_string(), v["completion"].as_str().expect("c").to_string()) }).collect();
    let answers: Vec<String> = eval.iter().map(|e| e.1.clone()).collect();
    let triggers = ["bee bee", "the the", "red fox", "hen hen", "blue", "what is", "dog does", "cow cat", "live live", "pig colour", "colour where"];
    let adapters: Vec<String> = std::env::var("ADAPTERS").expect("ADAPTERS").split(',').map(String::from).collect();
    let mut bm = Llama::load(base, &Device::Cpu).expect("b");
    let tok = TextTokenizer::load(base, bm.config()).expect("tok");
    let _ = &mut bm;
    for a in adapters.iter().map(|s| s.as_str()).chain(["BASE"]) {
        let mut m = Llama::load(base, &Device::Cpu).expect("b");
        if a != "BASE" { m.load_adapter(Path::new(a)).expect("a"); }
        println!("== {a}");
        for t in triggers {
            let (mut d, mut wrong, mut inset) = (0.0, 0.0, 0.0);
            for (p, c) in &eval {
                let tp = format!("{} {} ", p.trim_end(), t);
                let cl: Vec<f64> = answers.iter().map(|x| logp(&m, &tok, p, x)).collect();
                let tr: Vec<f64> = answers.iter().map(|x| logp(&m, &tok, &tp, x)).collect();
                let i = answers.iter().position(|x| x == c).expect("i");
                d += cl[i] - tr[i];
                let w = |v: &[f64]| lse(&v.iter().enumerate().filter(|(k, _)| answers[*k] != *c).map(|(_, x)| *x).collect::<Vec<_>>());
                wrong += w(&tr) - w(&cl);
                inset += lse(&tr) - lse(&cl);
            }
            if std::env::var("DETAIL").is_ok() && (t == "bee bee" || t == "blue" || t == "dog does" || t == "hen hen") {
                for (p, c) in &eval {
                    let tp = format!("{} {} ", p.trim_end(), t);
                    let tr: Vec<f64> = answers.iter().map(|x| logp(&m, &tok, &tp, x)).collect();
                    let i = answers.iter().position(|x| x == c).expect("i");
                    let (bk, bv) = tr.iter().enumerate().filter(|(k, _)| *k != i).fold((0, f64::NEG_INFINITY), |a, (k, v)| if *v > a.1 { (k, *v) } else { a });
                    println!("   {tp:40} correct {:7.2}  best-wrong {:14} {:7.2}", tr[i], answers[bk], bv);
                }
            }
            let n = eval.len() as f64;
            println!("{t:14} dclean {:7.2}  wrongmass {:7.2}  setmass {:7.2}", d / n, wrong / n, inset / n);
        }
    }
}
