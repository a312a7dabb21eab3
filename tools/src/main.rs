fn main() {
    println!("cuda: {}", regioncl_trainer::cuda_available());
}
