
    long long sum = 0;
    for (int month = 1; month <= 3; month++) {
        sum += getMonthlySales(month);
    }
    printf("%lld\n", sum);
    return 0;
}
